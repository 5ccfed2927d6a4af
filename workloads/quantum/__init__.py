"""Circuits and their executors: the qiskit definitions, the batched torch statevector, shot sampling,
parameter-shift gradients and the qiskit backends (Aer, fake and IBM devices)."""
