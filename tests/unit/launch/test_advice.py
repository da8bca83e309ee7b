import signal

import pytest

from citadel.launch.advice import advice_for, exit_status


def test_sigkill_is_explained_as_out_of_memory_with_heap_advice():
    advice = advice_for(-signal.SIGKILL)
    assert advice is not None
    assert "out of memory" in advice.cause
    assert "lower CITADEL_HEAP" in advice.remedy


def test_segfault_points_at_stack_and_extensions():
    advice = advice_for(-signal.SIGSEGV)
    assert advice is not None and "CITADEL_STACK" in advice.remedy


@pytest.mark.parametrize("code", [0, 1, 3, 70, 255])
def test_normal_exit_needs_no_advice(code):
    assert advice_for(code) is None
    assert exit_status(code) == code


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGPIPE])
def test_requested_stops_need_no_advice_and_exit_like_a_shell(sig):
    assert advice_for(-sig) is None
    assert exit_status(-sig) == 128 + sig


def test_unknown_signal_names_the_signal():
    advice = advice_for(-signal.SIGUSR1)
    assert advice is not None and "SIGUSR1" in advice.cause


def test_render_is_two_lines_cause_then_hint():
    text = advice_for(-signal.SIGKILL).render()
    lines = text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("citadel: error: ") and lines[1].startswith("citadel: hint: ")
