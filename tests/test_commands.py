"""Documented commands cannot go stale: every ``python src/<script>.py ...`` and ``make <target>``
in the README, docs/, benchmarks/README.md, the comments of conf/ and the entry points' docstrings
is checked as a user would type it.

A ``python src/X.py`` command composes ``conf/X.yaml`` in this process with Hydra's compose API and
the command's overrides (an unknown key, group or choice fails, as it fails the command with exit
status 2), then meets the entry point's own cheap checks: keys that moved
(``carseg.runs.entrypoint.check_renamed``), the trainer's values, serve's limits, export's format.
``sweep_report.py`` takes its arguments through its own parser. A ``make`` command's target must
dry-run (``make -n``). Placeholders (``<checkpoint>``, ``$CKPT``, ``...``) stand for any value;
``-m`` sweeps compose their first value of each comma list.
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.entry import REPO

# conf/<script>.yaml for each Hydra entry point; sweep_report.py has its own argument parser
HYDRA_SCRIPTS = ("train", "eval", "predict", "export", "serve")
ARGPARSE_SCRIPTS = ("sweep_report",)

# `python src/x.py`, `.venv/bin/python src/x.py`, `torchrun --nproc_per_node=4 src/x.py`, `srun ...`
PYTHON_COMMAND = re.compile(r"(?:\bpython3?|\btorchrun(?:\s+--\S+)*)\s+src/(\w+)\.py\b")
MAKE_COMMAND = re.compile(r"(?<![\w/.-])make\s+([a-z][\w-]*)")
# `make` in a comment's prose ("would make a sub-folder"), not a command
NOT_TARGETS = {"a", "an", "the", "it", "its", "one", "sure", "sense", "them", "this", "that"}
INLINE_CODE = re.compile(r"`([^`]+)`")
SHELL_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
# an override as Hydra reads it: key=value, group/choice=value, +key=value, ~key
OVERRIDE = re.compile(r"^[+~]{0,2}[A-Za-z_][\w./@-]*(=|$)")


@dataclass(frozen=True)
class Command:
    """A documented command: where it is written, and its words after ``src/<script>.py`` (or the
    make target)."""

    source: str  # file:line
    kind: str  # a script name (train, eval, ...) or "make"
    words: tuple[str, ...]

    def __str__(self) -> str:
        program = "make" if self.kind == "make" else f"python src/{self.kind}.py"
        return f"{self.source}: {program} {' '.join(self.words)}".rstrip()


# --- where commands are written --------------------------------------------------------------


def documents(repo: Path = REPO) -> list[tuple[str, str]]:
    """(name, text) of every place a command is written: markdown as it is; a YAML file as its
    comments (each line's text after its ``#``, other lines blank, so line numbers hold); an
    entry point as its module docstring, at its place in the file."""
    found = []
    for path in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        found.append(path)
    found.append(repo / "benchmarks" / "README.md")
    texts = [(str(p.relative_to(repo)), p.read_text()) for p in found if p.is_file()]
    for path in sorted((repo / "conf").rglob("*.yaml")):
        texts.append((str(path.relative_to(repo)), yaml_comments(path.read_text())))
    for path in sorted((repo / "src").glob("*.py")):
        texts.append((str(path.relative_to(repo)), docstring_lines(path.read_text())))
    return texts


def yaml_comments(text: str) -> str:
    """The comments of a YAML file, line for line (a ``#`` inside quotes is not one)."""
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("#"):
            lines.append(stripped[1:])
        elif " #" in line and "'" not in line and '"' not in line:
            lines.append(line.split(" #", 1)[1])
        else:
            lines.append("")
    return "\n".join(lines)


def docstring_lines(source: str) -> str:
    """The module docstring of a Python file, at its own lines (the rest blank)."""
    module = ast.parse(source)
    if not (module.body and isinstance(module.body[0], ast.Expr)):
        return ""
    node = module.body[0]
    if not isinstance(node.value, ast.Constant) or not isinstance(node.value.value, str):
        return ""
    lines = [""] * len(source.splitlines())
    for i in range(node.lineno - 1, node.end_lineno):
        lines[i] = source.splitlines()[i]
    return "\n".join(lines)


def code_spans(name: str, text: str) -> list[tuple[int, str]]:
    """(line, text) of the places a command may be: a markdown file's fenced blocks (a line each,
    ``\\``-continued lines joined) and inline code (``` `...` ```, possibly across lines); in a
    YAML comment or a docstring every line (continued lines joined)."""
    if not name.endswith(".md"):
        return joined_lines(text.splitlines())
    spans: list[tuple[int, str]] = []
    prose: list[str] = []
    fenced: list[str] = []
    in_fence, fence_start = False, 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if in_fence:
                spans += [(fence_start + n, s) for n, s in joined_lines(fenced)]
                fenced = []
            in_fence, fence_start = not in_fence, number
            prose.append("")
        elif in_fence:
            fenced.append(line)
            prose.append("")
        else:
            prose.append(line)
    body = "\n".join(prose)
    for match in INLINE_CODE.finditer(body):
        spans.append((body.count("\n", 0, match.start()) + 1, match.group(1).replace("\n", " ")))
    return spans


def joined_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, line) with lines ending in ``\\`` joined to the next."""
    joined, start, parts = [], None, []
    for number, line in enumerate(lines, 1):
        if start is None:
            start = number
        text = line.rstrip()
        if text.endswith("\\"):
            parts.append(text[:-1])
            continue
        parts.append(text)
        joined.append((start, " ".join(p.strip() for p in parts)))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(p.strip() for p in parts)))
    return joined


# --- what a command says ---------------------------------------------------------------------


def commands_in(name: str, text: str) -> list[Command]:
    """Every documented command of one document."""
    found = []
    for line, span in code_spans(name, text):
        for match in PYTHON_COMMAND.finditer(span):
            rest = span[match.end() :]
            found.append(Command(f"{name}:{line}", match.group(1), arguments(rest)))
        for match in MAKE_COMMAND.finditer(span):
            if match.group(1) in NOT_TARGETS:
                continue
            found.append(Command(f"{name}:{line}", "make", (match.group(1),)))
    return found


@functools.cache
def all_commands() -> list[Command]:
    return [c for name, text in documents() for c in commands_in(name, text)]


def arguments(rest: str) -> tuple[str, ...]:
    """The words after the script, up to the end of the command: a backtick, a shell comment,
    ``;``, ``&&``, ``|`` or the first word that is prose. Placeholders become ``x``."""
    rest = rest.split("`")[0]
    rest = re.split(r"\s(?:#|;|&&|\|\||\|)\s|\s#", " " + rest, maxsplit=1)[0]
    rest = PLACEHOLDER.sub("x", SHELL_VARIABLE.sub("x", rest))
    try:
        words = shlex.split(rest)
    except ValueError:  # an unbalanced quote: the command ran on into prose
        words = rest.split()
    kept: list[str] = []
    optional: list[str] | None = None  # an optional group of the usage: [tta=true overlays=true]
    for word in words:
        if word.startswith("[") and optional is None and not word.startswith("[x"):
            optional, word = [], word[1:]
        closes = optional is not None and word.endswith("]") and word.count("[") < word.count("]")
        if closes:
            word = word[:-1]
        if optional is not None:
            optional.append(word)
            if closes:  # a usage pattern ([key=value ...], [overrides]) is not options
                words_in = [w for w in optional if w]
                if all(OVERRIDE.match(w) and "=" in w for w in words_in):
                    kept += words_in
                optional = None
            continue
        if word == "...":
            continue
        if not (OVERRIDE.match(word) or word.startswith("-") or re.fullmatch(r"[\w./]+", word)):
            break
        kept.append(word)
    return tuple(kept)


# --- checking one command --------------------------------------------------------------------


def hydra_overrides(words: tuple[str, ...]) -> tuple[list[list[str]], list[str]]:
    """(the override lists to compose, problems) of a Hydra entry point's words: ``-m`` dropped;
    a sweep over a group's choices (``model/loss=bce,bce_dice``) composed once per choice, a sweep
    over a key's values (``model.optimizer.lr=1e-4,3e-4``) with its first; ``...`` any value; of
    alternatives (``onnx|torchscript``) the first."""
    fixed, sweeps, problems = [], [], []
    for word in words:
        if word in ("-m", "--multirun"):
            continue
        if word.startswith("-") or "=" not in word and not word.startswith("~"):
            problems.append(f"{word!r} is not an override (key=value)")
            continue
        key, sep, value = word.partition("=")
        if value == "...":  # any value: data=..., data.root=...
            continue
        if re.fullmatch(r"\w+(\|\w+)+", value):
            value = value.split("|")[0]
        values = sweep_values(value) if sep else [value]
        if len(values) > 1 and "." not in key:  # choices of a group: each must be a file
            sweeps.append((key, values))
        elif sep and "/" in values[0] and "/" not in key:  # a path: any path composes alike
            fixed.append(f"{key}=x")
        else:  # a key's values: the first (a value's kind is the entry point's to check)
            fixed.append(f"{key}={values[0]}" if sep else word)
    rounds = max((len(values) for _, values in sweeps), default=1)
    variants = [
        fixed + [f"{key}={values[min(i, len(values) - 1)]}" for key, values in sweeps]
        for i in range(rounds)
    ]
    return variants, problems


def sweep_values(value: str) -> list[str]:
    """``1e-4,3e-4`` -> ``["1e-4", "3e-4"]``: the values of a sweep, split at the commas outside
    brackets and quotes."""
    values, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(value):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            values.append(value[start:i])
            start = i + 1
    return values + [value[start:]]


@pytest.fixture(scope="module")
def conf():
    """Hydra's compose API on conf/, with carseg's resolvers registered, for this module."""
    from hydra import initialize_config_dir

    import carseg.runs.config  # noqa: F401  (registers the resolvers conf/ uses)

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        yield


def problems_of(command: Command) -> list[str]:
    """What is wrong with ``command``; empty if a user could run it as written. Call inside
    ``conf``."""
    if command.kind == "make":
        return make_problems(command.words[0])
    if command.kind in ARGPARSE_SCRIPTS:
        return argparse_problems(command)
    if command.kind not in HYDRA_SCRIPTS:
        if (REPO / "src" / f"{command.kind}.py").is_file():
            return [f"src/{command.kind}.py has no checker here: add it to test_commands.py"]
        return [f"src/{command.kind}.py does not exist"]
    variants, problems = hydra_overrides(command.words)
    if problems:
        return problems
    from carseg.runs.entrypoint import check_renamed
    from carseg.utils.errors import ConfigError

    try:
        check_renamed(list(command.words))
        for overrides in variants:
            own_checks(command.kind, composed(command.kind, tuple(overrides)), overrides)
    except ConfigError as err:
        return [str(err)]
    except Exception as err:  # noqa: BLE001 (Hydra's refusals have several classes)
        return [f"{type(err).__name__}: {err}".splitlines()[0]]
    return []


@functools.cache
def composed(script: str, overrides: tuple[str, ...]):
    """``conf/<script>.yaml`` with ``overrides``, as Hydra composes it for the command (with the
    ``hydra`` node where an override sets it)."""
    from hydra import compose

    with_hydra = any(o.lstrip("+~").startswith(("hydra.", "hydra/")) for o in overrides)
    return compose(config_name=script, overrides=list(overrides), return_hydra_config=with_hydra)


def own_checks(script: str, cfg, overrides: list[str]) -> None:
    """The entry point's checks of option values that need no data, model or device."""
    if script == "eval":
        from carseg.inference.evaluate import refuse_training_keys

        refuse_training_keys(overrides)
    if script == "train" or (script in ("eval", "predict") and "trainer" in cfg):
        from carseg.training.trainer import TRAINER_VALUES, check_trainer_values

        check_trainer_values({k: cfg.trainer[k] for k in TRAINER_VALUES if k in cfg.trainer})
    if script == "serve":
        from carseg.serving.server import check_options

        check_options(cfg)
    if script == "export":
        from carseg.inference.export import FORMATS
        from carseg.utils.checks import check_choice

        check_choice("format", cfg.format, FORMATS)


def argparse_problems(command: Command) -> list[str]:
    """``src/sweep_report.py``'s parser takes the words (the report itself is not made)."""
    import contextlib
    import io
    import runpy

    main = runpy.run_path(str(REPO / "src" / f"{command.kind}.py"))["main"]
    parsed = []
    main.__globals__.update(
        report=lambda *a, **k: parsed.append(a) or _Printed(),
        latest_sweep=lambda folder: Path(folder),
    )
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(list(command.words))
    except SystemExit as exit_:
        return [f"its parser refused {list(command.words)} (exit {exit_.code})"]
    return [] if parsed else ["the parser took the words but nothing was reported"]


class _Printed:
    text = ""


@functools.cache
def make_problems(target: str) -> list[str]:
    proc = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    return [] if proc.returncode == 0 else [f"make -n {target}: {proc.stderr.strip()}"]


# --- the tests -------------------------------------------------------------------------------


def test_the_documented_commands_are_found():
    commands = all_commands()
    sources = {c.source.split(":")[0] for c in commands}
    kinds = {c.kind for c in commands}
    assert {"README.md", "conf/experiment/carvana_cpu.yaml", "src/train.py"} <= sources
    assert {"train", "eval", "predict", "export", "serve", "sweep_report", "make"} <= kinds
    assert any(c.words[:1] == ("train",) for c in commands if c.kind == "make")
    # a command continued over lines is read whole
    joined = [c for c in commands if c.source.startswith("conf/hydra/launcher/slurm.yaml")]
    assert joined and any(w.startswith("model.optimizer.lr=") for w in joined[0].words)


@pytest.mark.usefixtures("conf")
def test_every_documented_command_runs_as_written():
    failures = [f"{c}\n    {'; '.join(p)}" for c in all_commands() if (p := problems_of(c))]
    assert not failures, "stale commands:\n" + "\n".join(failures)


STALE_DOC = """\
# Try it

```bash
python src/train.py experiment=carvana_cpu model.optimizer.learning_rate=1e-3
python src/train.py model.lr=1e-3
python src/eval.py ckpt_path=$CKPT tta=true \\
    size_of_model=[64,96]
python src/train.py -m model/loss=bce,bce_dicee
python src/export.py ckpt_path=<checkpoint> format=pdf
python src/train.py trainer.max_time=ten_minutes
python src/eval.py ckpt_path=$CKPT data=carvana data.size=[64,96]
make trian
```

Prose with `python src/predict.py ckpt_path=$CKPT input=photos/ overlay=true` inline.
"""


@pytest.mark.usefixtures("conf")
def test_a_renamed_or_mistyped_option_in_a_doc_fails():
    commands = commands_in("docs/stale.md", STALE_DOC)
    kinds = ["train", "train", "eval", "train", "export", "train", "eval", "make", "predict"]
    assert [c.kind for c in commands] == kinds
    for command in commands:
        assert problems_of(command), f"not caught: {command}"
    problems = [" ".join(problems_of(c)) for c in commands]
    assert "model.optimizer.learning_rate" in problems[0]
    assert "model.optimizer.lr" in problems[1]  # the moved key names its new spelling
    assert "size_of_model" in problems[2]  # read over the line's continuation
    assert "bce_dicee" in problems[3]  # every value of a sweep is composed
    assert "format" in problems[4] and "max_time" in problems[5]
    assert "data.size" in problems[6] and "size=[height,width]" in problems[6]  # eval's own key
    assert "trian" in problems[7] and "overlay" in problems[8]


@pytest.mark.usefixtures("conf")
def test_the_same_commands_spelled_right_pass():
    fixed = (
        STALE_DOC.replace("learning_rate", "lr")
        .replace("model.lr", "model.optimizer.lr")
        .replace("size_of_model", "size")
        .replace("bce,bce_dicee", "bce_dice,bce")
        .replace("format=pdf", "format=onnx")
        .replace("ten_minutes", "00:00:10:00")
        .replace("data.size=[64,96]", "size=[64,96]")
        .replace("make trian", "make train")
        .replace("overlay=", "overlays=")
    )
    for command in commands_in("docs/fixed.md", fixed):
        assert not problems_of(command), command


def test_placeholders_stand_for_any_value():
    words = arguments(
        "ckpt_path=<run>/checkpoints/<best>.ckpt [data=carvana data.root=...] (or onnx_path=...)"
    )
    assert words == ("ckpt_path=x/checkpoints/x.ckpt", "data=carvana", "data.root=...")
    assert arguments("[group=choice ...] [key=value ...]") == ()
    assert arguments("onnx_path=${CKPT%.ckpt}.onnx input=photos/   # comment") == (
        "onnx_path=x.onnx",
        "input=photos/",
    )
    assert sweep_values("1e-4,3e-4") == ["1e-4", "3e-4"]
    assert sweep_values("[1,2],[3,4]") == ["[1,2]", "[3,4]"]
    assert sweep_values("'a,b'") == ["'a,b'"]


# --- the docs' other promises ----------------------------------------------------------------

USER_DOCS = (
    "README.md",
    "benchmarks/README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
)
# what belongs to the project's history, not to a user's page
HISTORY = {
    "a date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "an issue number": re.compile(r"\bissues? #?\d+", re.IGNORECASE),
    "a commit id": re.compile(r"(?<![\w%#-])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w.-])"),
    "a test count": re.compile(r"\b\d+ (?:tests|passed|failed|skipped)\b"),
}


@pytest.mark.parametrize("doc", USER_DOCS)
def test_user_docs_hold_no_history(doc):
    text = (REPO / doc).read_text()
    found = [
        f"{what}: {m.group(0)!r} (line {text.count(chr(10), 0, m.start()) + 1})"
        for what, pattern in HISTORY.items()
        for m in pattern.finditer(text)
    ]
    assert not found, f"{doc} holds {found}"


def test_the_history_patterns_find_history():
    sample = "Measured 2026-12-05 at 5739125 (issue 11): 381 tests passed, resnet34-b627a593.pth"
    hits = {what for what, pattern in HISTORY.items() if pattern.search(sample)}
    assert hits == set(HISTORY)
    colours = "'#3a6ea5', background=%23f0f0f0"
    assert not HISTORY["a commit id"].search(f"resnet34-b627a593.pth 0.9246 1918x1280 {colours}")


def test_where_things_live_names_every_module():
    readme = (REPO / "README.md").read_text()
    layout = readme.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    package = REPO / "src" / "carseg"
    missing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name != "__init__.py"
        and not re.search(rf"(?<![\w.]){re.escape(path.name)}", layout)
    ]
    missing += [
        f"{p.name}/"
        for p in sorted(package.iterdir())
        if p.is_dir() and p.name != "__pycache__"
        if f"{p.name}/" not in layout
    ]
    assert not missing, f"README's 'Where things live' does not name {missing}"
