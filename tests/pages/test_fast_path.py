"""The Iterations page (its slider) and the Compare page refine through the fused native kernel (issue 25).

Their maps must come from the same fast path the benchmarks time: ``FusedRNN`` with the native
kernel, never ``RefinerRNN``'s own forward pass or ``FusedRNN``'s torch ops (several times slower).
"""

from __future__ import annotations

import pytest

from refiner.models import native
from refiner.models.fused import FusedRNN
from refiner.models.rnn import RefinerRNN
from tests.helpers import run

pytestmark = pytest.mark.skipif(native.load(5) is None, reason="no C compiler: the native kernel cannot be built")


@pytest.fixture()
def kernel_calls(monkeypatch) -> list[str]:
    """Names of the native kernel's entry points as the pages call them; the slow paths fail the page."""
    calls: list[str] = []
    for name in ("run_step", "run_steps"):
        fn = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _fn=fn, _name=name, **kw: calls.append(_name) or _fn(*a, **kw))

    def slow_path(*args, **kwargs):
        raise AssertionError("the page refined without the native kernel")

    monkeypatch.setattr(RefinerRNN, "forward", slow_path)
    monkeypatch.setattr(FusedRNN, "_forward", slow_path)
    return calls


def test_the_iteration_slider_shows_maps_from_the_native_kernel(app_ws, kernel_calls):
    at = run("pages/3_Iterations.py")
    assert not at.exception and not at.error
    assert kernel_calls  # the page's refinement ran in the kernel (the workspace's RNN: 3 iterations)
    slider = at.slider(key="iteration")
    assert slider.max == 3
    kernel_calls.clear()
    slider.set_value(1).run()  # the slider reads the cached iterations: nothing recomputed, no slow path
    assert not at.exception and not at.error and not kernel_calls


def test_the_compare_page_refines_with_the_native_kernel(app_ws, kernel_calls):
    at = run("pages/4_Compare.py")
    assert not at.exception and not at.error
    assert "RNN" in list(at.table[0].value.index) and kernel_calls
