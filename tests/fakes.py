"""Small fakes shared by unit tests: a clock that only moves when the code sleeps."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def fake_http(**kwargs):
    """An HttpClient on a fake clock with jitter fixed at its ceiling (rng = 1.0)."""
    from azprov.http import HttpClient

    clock = FakeClock()
    client = HttpClient(clock=clock, sleep=clock.sleep, rng=kwargs.pop("rng", lambda: 1.0), **kwargs)
    return client, clock
