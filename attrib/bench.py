"""Benchmarks (`make bench`). Filled by the stage 1 and stage 2 work; never invented numbers."""


def main() -> None:
    print("no benchmarks yet")


if __name__ == "__main__":
    main()
