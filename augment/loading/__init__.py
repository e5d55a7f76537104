"""The runtime: the Loader (epochs, order, seeds, sharding, state), one batch in any
process, the backends, the watchdog and shared memory."""
