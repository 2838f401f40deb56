"""ego_ros: personalized vision-language perception for ROS 2 robots (the Ego method).

Layers, bottom to top; lower layers never import upper ones:

- ``ego_ros.core``      method core: selection math, memories, store, prompts, parsing, engine
                        (torch + numpy only; usable without ROS)
- ``ego_ros.backends``  LVLM adapters over transformers (Qwen2.5-VL, InternVL3) and the
                        offline tiny model builder
- ``ego_ros.serving``   the engine in a worker process over ZeroMQ
- ``ego_ros.ros``       the rclpy node, message conversions, launcher
- ``ego_ros.bag``, ``ego_ros.eval``, ``ego_ros.cli``  rosbag tools, evaluation, command line
"""

__version__ = "0.1.0"
