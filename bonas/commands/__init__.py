"""What the command line and the Python API run: a search here or in local worker processes, a budget to a tested
model, Slurm job arrays, retraining and showing a trial."""
