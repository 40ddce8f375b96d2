"""Package discovery for setuptools; everything else (metadata, dependencies, entry points) is in setup.cfg.

The shipped YAMLs stay in the repository's top-level `conf/` (where users browse and edit them), and a built
wheel carries them inside the package as `audiolm_pl/conf/**.yaml`: `package_dir` maps the data-only package
`audiolm_pl.conf` onto `conf/`, so `--config tiny` works from any install, not only from a checkout
(`audiolm_pl.config.shipped_conf_dir` finds either). This lives here, not in setup.cfg, because setup.cfg's
`packages = find:` cannot add a package that sits outside `audiolm_pl/`.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["audiolm_pl", "audiolm_pl.*"]) + ["audiolm_pl.conf"],
    package_dir={"audiolm_pl.conf": "conf"},
    package_data={"audiolm_pl.conf": ["**/*.yaml"]},
)
