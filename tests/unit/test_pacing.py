"""StepPacer: how long the engine loop waits for arrivals before scheduling the next step."""
from tritium.engine.pacing import StepPacer


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_waits_until_the_step_in_flight_is_about_to_end():
    clock = Clock()
    pacer = StepPacer(margin_s=0.0005, clock=clock)
    assert pacer.delay() == 0.0  # nothing measured yet
    pacer.finished_decode(0.006)
    pacer.finished_decode(0.005)  # the shortest recent step is the estimate
    pacer.launched(0.0004, decode_in_flight_since=100.0)
    clock.now = 100.001
    assert abs(pacer.delay() - (0.005 - 0.0004 - 0.0005 - 0.001)) < 1e-12
    clock.now = 100.01  # past the expected end: schedule now
    assert pacer.delay() == 0.0


def test_never_waits_after_an_arrival_or_after_a_step_that_is_not_a_decode():
    clock = Clock()
    pacer = StepPacer(clock=clock)
    pacer.finished_decode(0.005)
    pacer.launched(0.0004, decode_in_flight_since=100.0)
    pacer.arrived()
    assert pacer.delay() == 0.0
    pacer.launched(0.0004, decode_in_flight_since=100.0)  # the arrival was scheduled: pace again
    assert pacer.delay() > 0.0
    pacer.launched(0.0004, decode_in_flight_since=None)  # a prefill (or synchronous) step
    assert pacer.delay() == 0.0
    pacer.finished_decode(None)  # an untimed step adds nothing
    assert list(pacer._gpu_s) == [0.005]
