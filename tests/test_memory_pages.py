"""memory_pages: NumPy's huge-page setting is off inside small_pages() and restored after, and the
runs that touch their memory once use it."""

import numpy as np
import pytest

from scratchnst import lbfgs_memory, memory_pages, training, transformer_net

REAL_SWITCH = memory_pages._set_madvise_hugepage  # NumPy's own, kept before any test replaces it
needs_switch = pytest.mark.skipif(REAL_SWITCH is None, reason="this NumPy has no huge-page switch")


@pytest.fixture
def spy(monkeypatch):
    """Records every value given to NumPy's switch while still setting it."""
    calls = []
    real = REAL_SWITCH

    def switch(enabled):
        calls.append(enabled)
        return real(enabled)

    original = real(True)  # huge pages on (NumPy's default) before each test, whatever the environment says
    monkeypatch.setattr(memory_pages, "_set_madvise_hugepage", switch)
    yield calls
    real(original)


@needs_switch
@pytest.mark.parametrize("before", [True, False])
def test_off_inside_and_numpys_setting_restored_after_even_on_an_error(spy, before):
    numpy_switch = REAL_SWITCH
    previous = numpy_switch(before)
    try:
        with pytest.raises(KeyError):
            with memory_pages.small_pages():
                assert numpy_switch(False) is False  # off here (and set off again, harmlessly)
                raise KeyError("inside")
        assert numpy_switch(before) is before  # what it was before the context
    finally:
        numpy_switch(previous)
    assert spy == [False, before]


@needs_switch
def test_the_lbfgs_pairs_buffer_is_made_in_small_pages(spy):
    memory = lbfgs_memory.PairMemory(3, 5000, np.float32)
    assert spy == [False, True]
    assert memory._buffer.shape == (6, 5000) and not memory._buffer.any()


@needs_switch
def test_applying_a_trained_network_runs_in_small_pages(spy, monkeypatch):
    seen = []
    real_stylize = transformer_net.stylize

    def stylize(*args, **kwargs):
        seen.append(list(spy))  # what had been set when the network ran
        return real_stylize(*args, **kwargs)

    monkeypatch.setattr(transformer_net, "stylize", stylize)
    params = transformer_net.init_params(np.random.default_rng(0), widths=(4, 8, 8), residual_blocks=1)
    out = training.stylize_array(params, np.zeros((1, 20, 24, 3), np.float32))
    assert out.shape == (20, 24, 3)
    assert seen == [[False]] and spy == [False, True]


@needs_switch
def test_each_pass_of_stylize_runs_in_small_pages(spy, monkeypatch, squeezenet_weights_path):
    from scratchnst import transfer

    seen = []

    def optimize_pass(*args, **kwargs):
        seen.append(list(spy))
        raise KeyboardInterrupt  # enough: the context must be left as it was

    monkeypatch.setattr(transfer, "_optimize_pass", optimize_pass)
    rng = np.random.default_rng(0)
    content = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
    with pytest.raises(KeyboardInterrupt):
        transfer.stylize(content, content, model="squeezenet", weights=str(squeezenet_weights_path), size=48,
                         iters=1)
    assert seen == [[False]] and spy == [False, True]


def test_without_the_switch_the_context_runs_its_body_and_lets_errors_through(monkeypatch):
    monkeypatch.setattr(memory_pages, "_set_madvise_hugepage", None)  # a NumPy without it
    ran = []
    with memory_pages.small_pages():
        ran.append(np.zeros(2**21, np.float32).size)  # 8 MiB: NumPy would ask huge pages for it
    assert ran == [2**21]
    with pytest.raises(KeyError):
        with memory_pages.small_pages():
            raise KeyError("inside")
