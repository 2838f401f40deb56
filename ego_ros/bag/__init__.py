"""rosbag2 tools: writing, reading and playing camera bags, with ground-truth labels."""
