"""The one-GPU suite (`bash benchmarks/gpu/suite.sh`): its FSDP check and the report that turns every step into verdict lines."""
