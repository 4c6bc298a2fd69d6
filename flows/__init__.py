"""Control flow only: the flywheel loop, its CLI and its deployments."""
