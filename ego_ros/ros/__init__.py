"""ROS 2 layer: the rclpy node, message conversions and the launcher."""
