"""Launch ego_node with config/ego.yaml, and optionally the engine worker.

    ros2 launch ego_ros ego.launch.py camera_topic:=/camera/image_raw
    ros2 launch ego_ros ego.launch.py use_worker:=true model_path:=/models/Qwen2.5-VL-7B-Instruct

Arguments: params_file, camera_topic (remaps `image` and `image/compressed`), model_path
(overrides model.path), store_dir (overrides store.dir), namespace, use_worker,
worker_endpoint. With use_worker:=true the model runs in the package's `ego_worker` executable,
configured from the same parameters file (model.*, store.dir, recognition.max_in_context,
recognition.threshold, engine.max_new_tokens; model_path/store_dir override them), and the node
gets engine.endpoint:=worker_endpoint. Without ROS launch (pip-installed ROS 2)
`ego-ros up --params-file FILE [--use-worker]` does the same.
"""

from pathlib import Path

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import ExecutableInPackage, FindPackageShare

from launch import LaunchDescription


def _setup(context, *args, **kwargs):
    from ego_ros.cli.up import node_parameters, worker_arguments

    def arg(name):
        return context.perform_substitution(LaunchConfiguration(name))

    params_file = arg("params_file")
    camera_topic = arg("camera_topic")
    namespace = arg("namespace")
    use_worker = arg("use_worker").lower() in ("true", "1", "yes")
    endpoint = arg("worker_endpoint")

    overrides = {}
    if arg("model_path"):
        overrides["model.path"] = arg("model_path")
    if arg("store_dir"):
        overrides["store.dir"] = arg("store_dir")
    actions = []
    if use_worker:
        # The worker loads what the node would have: the file's values, then the overrides.
        settings = {**node_parameters(Path(params_file), "ego_node", namespace), **overrides}
        overrides["engine.endpoint"] = endpoint
        # The console script lives in lib/ego_ros (setup.cfg), which is not on PATH.
        cmd = [ExecutableInPackage("ego_worker", "ego_ros"),
               *worker_arguments(settings, endpoint)]
        actions.append(ExecuteProcess(cmd=cmd, name="ego_worker", output="screen"))
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
                              description="run the model in an ego_worker process configured "
                                          "from params_file"),
        DeclareLaunchArgument("worker_endpoint", default_value="tcp://127.0.0.1:5555",
                              description="ZeroMQ endpoint of the worker"),
        OpaqueFunction(function=_setup),
    ])
