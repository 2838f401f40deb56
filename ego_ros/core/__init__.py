"""Method core of Ego: selection math, concept memories and their store, prompts, parsing and
the engine. Depends on torch and numpy only; never imports rclpy, zmq or transformers."""
