# azprov: the README's two commands are `make demo` and `make test`.
PY := .venv/bin/python

.PHONY: setup demo test test-fast deb rpm bench clean

setup:
	bash .ci/setup

demo: setup
	$(PY) scripts/demo.py

test: setup
	$(PY) -m pytest -ra
	bash .ci/pythons

test-fast: setup
	$(PY) -m pytest -ra -m "not boot"

deb:
	bash packaging/build-deb.sh

rpm:
	bash packaging/build-rpm.sh

bench: setup
	$(PY) benchmarks/report_ready.py

clean:
	rm -rf dist build *.egg-info .pytest_cache
