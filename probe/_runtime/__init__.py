"""The probe loop: scheduler, prober, the Job book and the sources of Jobs."""
