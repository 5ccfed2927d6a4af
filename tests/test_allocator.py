"""The allocator setting of `qmu run`'s workers: freed tensor memory is reused, not faulted in again."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys
import torch
from harness.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
from workloads.quantum.statevector import ansatz_expectations
torch.manual_seed(0)
states = torch.nn.functional.normalize(torch.rand(32, 256, dtype=torch.float64), dim=1)
weights = torch.rand(5, 8, 3, dtype=torch.float64, requires_grad=True)
def step():  # the quantum layer's forward and backward in a qnn-l5 training step (batch 32)
    ansatz_expectations(states, weights).sum().backward()
for _ in range(20):
    step()
before = faults()
for _ in range(100):
    step()
print((faults() - before) / 100)
"""


def _faults_per_tensor(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_freed_tensors_are_reused_not_faulted_in_again():
    default, kept = _faults_per_tensor("default"), _faults_per_tensor("keep")
    assert default >= 10  # measured: 50 page faults per step with glibc's defaults
    assert kept <= 5  # measured: 0.1 to 1.1
