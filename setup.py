"""ament_python package ego_ros (also pip-installable: `pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ego_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="ego_ros developers",
    maintainer_email="ego-ros@example.com",
    description="Personalized LVLM perception for ROS 2 robots (Ego method).",
    license="Apache-2.0",
    # colcon test runs pytest (not unittest) when "test" extras name it; tests_require is
    # ignored by current setuptools. Test paths and options: setup.cfg [tool:pytest].
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": [
            "ego-ros = ego_ros.cli.main:main",
            "ego_node = ego_ros.ros.node:main",
            "ego_worker = ego_ros.ros.worker_node:main",
        ],
    },
)
