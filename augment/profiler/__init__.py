"""The profiler: experiments and configs, a measured run, the console, augment-profile,
tune, and the report."""
