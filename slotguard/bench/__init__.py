"""The local target's benchmarks (`make bench`): storms, simulated instances, pgbench."""
