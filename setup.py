"""Package discovery for the three source folders (the rest of the build is in pyproject.toml).

yolograph/, passes/ and backends/ install as `yolograph`, `yolograph.passes` and `yolograph.backends`;
every package below them is found here, so a new pass library or backend package needs no list edit.
"""

from setuptools import find_packages, setup

SOURCES = {"yolograph": "yolograph", "yolograph.passes": "passes", "yolograph.backends": "backends"}


def packages_of(name: str, folder: str) -> list[str]:
    return [name] + [f"{name}.{sub}" for sub in find_packages(folder)]


def all_packages() -> list[str]:
    return [p for name, folder in SOURCES.items() for p in packages_of(name, folder)]


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import all_packages
    setup(packages=all_packages())
