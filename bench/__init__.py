"""heron's benchmark harness (see README.md). Importable as ``bench`` so that
servers can load ``bench.apps:hello`` from the repository root."""
