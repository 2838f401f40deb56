"""Launch ego_node with config/ego.yaml, and optionally the engine worker.

    ros2 launch ego_ros ego.launch.py camera_topic:=/camera/image_raw
    ros2 launch ego_ros ego.launch.py use_worker:=true model_path:=/models/Qwen2.5-VL-7B-Instruct

Arguments: params_file, camera_topic (remaps `image` and `image/compressed`), model_path
(overrides model.path), store_dir (overrides store.dir), namespace, use_worker,
worker_endpoint. With use_worker:=true the model runs in the package's `ego_worker` node
(same namespace), configured from the same parameters file as the node (model.*, store.dir,
recognition.max_in_context, recognition.threshold, engine.max_new_tokens; model_path/store_dir
override them); its log goes to the console and /rosout (`<namespace>/ego_worker`), and it is
respawned WORKER_RESPAWN_DELAY_S after it exits (the node keeps running meanwhile and
reconnects). The node gets engine.endpoint:=worker_endpoint and engine.check_worker:=true, so
it refuses a worker serving another model or store. worker_endpoint defaults to a Unix socket
derived from the namespace (`ego_ros.cli.up.default_endpoint`: one per namespace, e.g.
ipc:///tmp/ego_ros-<uid>/worker.robot1.sock for /robot1). Without ROS launch (pip-installed
ROS 2) `ego-ros up --params-file FILE [--use-worker]` does the same.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

WORKER_RESPAWN_DELAY_S = 2.0


def _setup(context, *args, **kwargs):
    from ego_ros.cli.up import WORKER_NAME, default_endpoint, node_parameters, worker_arguments

    def arg(name):
        return context.perform_substitution(LaunchConfiguration(name))

    params_file = arg("params_file")
    camera_topic = arg("camera_topic")
    namespace = arg("namespace")
    use_worker = arg("use_worker").lower() in ("true", "1", "yes")

    overrides = {}
    if arg("model_path"):
        overrides["model.path"] = arg("model_path")
    if arg("store_dir"):
        overrides["store.dir"] = arg("store_dir")
    actions = []
    if use_worker:
        endpoint = arg("worker_endpoint") or default_endpoint(namespace)
        # The worker loads what the node would have: the file's values, then the overrides.
        settings = {**node_parameters(Path(params_file), "ego_node", namespace), **overrides}
        overrides["engine.endpoint"] = endpoint
        overrides["engine.check_worker"] = True
        actions.append(Node(
            package="ego_ros",
            executable="ego_worker",
            name=WORKER_NAME,
            namespace=namespace,
            arguments=worker_arguments(settings, endpoint),
            respawn=True,
            respawn_delay=WORKER_RESPAWN_DELAY_S,
            output="screen",
            emulate_tty=True,
        ))
    actions.append(Node(
        package="ego_ros",
        executable="ego_node",
        name="ego_node",
        namespace=namespace,
        parameters=[params_file, overrides],
        remappings=[("image", camera_topic), ("image/compressed", camera_topic + "/compressed")],
        output="screen",
        emulate_tty=True,
    ))
    return actions


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("ego_ros"), "config", "ego.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="ego_node parameters file"),
        DeclareLaunchArgument("camera_topic", default_value="image",
                              description="camera image topic (Image; /compressed appended "
                                          "for CompressedImage)"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="LVLM checkpoint folder (empty: keep model.path)"),
        DeclareLaunchArgument("store_dir", default_value="",
                              description="concept memory folder (empty: keep store.dir)"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_worker", default_value="false",
                              description="run the model in an ego_worker node configured "
                                          "from params_file (respawned when it exits)"),
        DeclareLaunchArgument("worker_endpoint", default_value="",
                              description="ZeroMQ endpoint of the worker (empty: a Unix socket "
                                          "per namespace, ipc:///tmp/ego_ros-<uid>/worker"
                                          "[.<namespace>].sock)"),
        OpaqueFunction(function=_setup),
    ])
