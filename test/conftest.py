"""Test-wide set-up: isolate ROS 2 traffic of this run and share the tiny models."""

from __future__ import annotations

import os

# Before anything imports rclpy: a domain of our own and localhost-only discovery, so parallel
# runs on one machine (or a robot on the same network) never see our traffic.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
