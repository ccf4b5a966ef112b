"""Test helpers shared by the MFN and Graph-MFN tests (both are robustmsa.models.mfn.MemoryRecurrence models)."""

from __future__ import annotations

import torch

from robustmsa.data.batch import Batch
from robustmsa.models.align import align_to_text
from robustmsa.models.mfn import MemoryRecurrence


def constant_output(layers: torch.nn.Sequential, bias: list[float]) -> None:
    """Make an MLP output the constant ``bias`` (zero weights in its last layer)."""
    with torch.no_grad():
        layers[-1].weight.zero_()
        layers[-1].bias.copy_(torch.tensor(bias))


def step_by_step(model: MemoryRecurrence, batch: Batch, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Sample ``i`` run step by step over exactly its true text length with the model's own cells and step: the final
    h_m, the final memory u, the concatenated LSTM memories after each step and the traces of each step."""
    n = int(batch.lengths("text")[i])
    inputs = {"text": batch.text[i : i + 1, :n], "audio": align_to_text(batch, "audio")[i : i + 1, :n], "vision": align_to_text(batch, "vision")[i : i + 1, :n]}
    h = {m: torch.zeros(1, model.widths[m]) for m in inputs}
    c = {m: torch.zeros(1, model.widths[m]) for m in inputs}
    memory = torch.zeros(1, model.mem_dim)
    states, traces = [], []
    for t in range(n):
        c_prev = torch.cat([c[m] for m in inputs], dim=-1)
        for m in inputs:
            h[m], c[m] = model.cells[m](inputs[m][:, t], (h[m], c[m]))
        states.append(torch.cat([c[m] for m in inputs], dim=-1))
        memory, step_traces = model.step(c_prev, states[-1], memory)
        traces.append(step_traces)
    return h, memory, states, traces
