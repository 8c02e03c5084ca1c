# carseg's Hydra launchers (hydra/launcher=local|slurm). Hydra only instantiates plugins defined
# under the hydra_plugins namespace package, so they live here rather than in carseg.
