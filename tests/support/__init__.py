"""What the tests share, one module per job: running entry points, composing configs, Lightning
pieces, files on disk, and the table of refused commands."""
