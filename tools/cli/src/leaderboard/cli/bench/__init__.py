"""`make bench`: throughput, latency and memory of the services beside plain baselines, measured in one
run on one machine (see ``__main__``)."""
