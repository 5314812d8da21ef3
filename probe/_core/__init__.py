"""The pure core: the Job resource, its states, the restart rule, the read plan, the fold."""
