"""What every stage uses: errors a user can fix, checks of option values, atomic writes, which
process this is, and the one colour scheme of every picture. Nothing here imports another stage."""
