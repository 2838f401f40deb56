"""LVLM backends over transformers: one adapter per model family, and the offline tiny
model builder used by tests and the demo. Never imports rclpy or zmq."""
