"""The science of qmu-bench: data, circuits, simulators, models, training, unlearning, attacks, metrics.

Knows nothing of Ray, the result store or reports.
"""

__version__ = "0.1.0"
