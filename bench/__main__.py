"""`python -m bench`: run the benchmark suite (bench/run.py)."""

from bench.run import main

if __name__ == '__main__':
    main() # pylint: disable=no-value-for-parameter
