"""The four teaching/query services of ``ego_node``, as a mixin of :class:`EgoNode`.

    ~/introduce_concept  learn a concept from request images or the newest camera frames
    ~/ask                answer a question about the current camera clip, or the clip
                         ending at a buffered frame named by its stamp
    ~/list_concepts      the stored concepts with their token and view counts, and the
                         stored concepts skipped at load with why (another model's memory,
                         a corrupt file, a malformed manifest entry)
    ~/forget_concept     delete a stored concept, a skipped one included

They live apart from the node's stream and clip loop because they share none of its state
beyond the frame buffer and the service engine; the node registers them in a reentrant
callback group, so any of them may run concurrently with each other and with the camera.
"""

from __future__ import annotations

import numpy as np
from std_msgs.msg import Header

from ego_interfaces.srv import Ask, ForgetConcept, IntroduceConcept, ListConcepts
from ego_ros.core import limits
from ego_ros.core.names import InvalidConceptName, validate_concept_name
from ego_ros.core.overlay import draw_selection_overlay
from ego_ros.core.parsing import parse_options
from ego_ros.core.types import IntroduceResult
from ego_ros.ros.convert import (
    ImageConversionError,
    image_msg_to_rgb,
    ns_to_stamp,
    rgb_to_image_msg,
    stamp_to_ns,
)
from ego_ros.stream import Frame, sample_clip

# Seconds between repeats of the same warning/error log line (shared with the node).
LOG_THROTTLE_S = 5.0
# How long ~/ask waits for the camera frame a request names by stamp to arrive.
ASK_FRAME_WAIT_S = 0.5


class ServicesMixin:
    """Service callbacks for :class:`ego_ros.ros.node.EgoNode` (mix in before ``Node``).

    Relies on these members of the node, all set up in ``EgoNode.__init__``:
    ``get_logger()`` and ``get_clock()`` (from ``rclpy.node.Node``); ``_stream`` (live
    ``StreamSettings``), ``_settings`` (``NodeSettings``: the image size limits),
    ``_buffer`` (``FrameBuffer``), ``_service_engine`` (the engine used
    by services, never the clip loop's), ``_overlay_pub`` (``~/concept_overlay``); and the
    node's ``_sample()`` (cut a clip from the buffer), ``_no_frames(max_age_s)`` (why there
    is no fresh frame) and ``_explain(exc, what)`` (an actionable message for an engine
    failure). The node creates the services themselves, so names and QoS stay in one place.
    """

    # -- services (reentrant group: may run concurrently) ----------------------------------
    def _recent_frames(self, count: int, max_age_s: float) -> list[Frame]:
        """The newest ``count`` buffered frames that arrived within ``max_age_s`` (by arrival
        time, not stamp: a camera with a skewed clock still counts as live)."""
        now_ns = self.get_clock().now().nanoseconds
        fresh = [f for f in self._buffer.latest(count)
                 if now_ns - f.received_ns <= max_age_s * 1e9]
        return fresh

    def _on_introduce_concept(self, request: IntroduceConcept.Request,
                              response: IntroduceConcept.Response) -> IntroduceConcept.Response:
        response.success = False
        stream = self._stream
        try:
            name = validate_concept_name(request.name)
            # before any image is converted or frame copied (limits.MAX_VIEWS)
            limits.check_views(len(request.images) or request.num_frames
                               or stream.introduce_num_frames)
        except ValueError as exc:  # InvalidConceptName, LimitExceeded
            response.message = str(exc)
            return response
        if request.images:
            images, headers = [], []
            for index, msg in enumerate(request.images):
                try:
                    images.append(image_msg_to_rgb(msg, limits=self._settings.image_limits))
                except Exception as exc:  # ImageConversionError, or a converter bug
                    reason = str(exc) if isinstance(exc, ImageConversionError) else (
                        f"unexpected {type(exc).__name__}: {exc}")
                    response.message = (f"image {index} of {len(request.images)} in the "
                                        f"request cannot be used: {reason}")
                    return response
                headers.append(msg.header)
        else:
            frames = self._recent_frames(request.num_frames or stream.introduce_num_frames,
                                         stream.introduce_max_age_s)
            if not frames:
                response.message = self._no_frames(stream.introduce_max_age_s)
                return response
            images = [f.rgb for f in frames]
            headers = [Header(stamp=ns_to_stamp(f.stamp_ns), frame_id=f.frame_id)
                       for f in frames]
        try:
            result = self._service_engine.introduce(name, images, replace=bool(request.replace))
        except Exception as exc:
            response.message = f"could not introduce {name!r}: {self._explain(exc, 'introduce')}"
            return response
        response.success = True
        response.num_tokens, response.num_views = result.num_tokens, result.num_views
        response.keywords = [", ".join(k) for k in result.keywords]
        response.area_percent = float(np.mean(result.area_percent)) if result.area_percent \
            else 0.0
        response.message = (f"learned {result.name!r} from {len(images)} view(s) in "
                             f"{result.elapsed_s:.1f} s: {result.num_tokens} memory tokens over "
                             f"{result.num_views} stored view(s)")
        self.get_logger().info(response.message)
        self._publish_overlays(images, headers, result)
        return response

    def _publish_overlays(self, images: list[np.ndarray], headers: list[Header],
                          result: IntroduceResult) -> None:
        """Publish the selected patches over each reference view (best effort: the concept is
        already learned, so a failure here is logged and never fails the service call)."""
        for image, header, selected in zip(images, headers, result.selected):
            try:
                overlay = draw_selection_overlay(image, selected["indices"],
                                                 tuple(selected["grid"]))  # [H, W, 3]
                self._overlay_pub.publish(rgb_to_image_msg(overlay, "rgb8", header))
            except Exception as exc:  # KeyError/ValueError on odd selections, or any bug
                self.get_logger().warning(
                    f"no overlay for {result.name!r}: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=LOG_THROTTLE_S)

    def _on_ask(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        response.success = False
        try:  # sizes first (limits.MAX_QUESTION_CHARS, ...): nothing long is parsed or queued
            question = limits.check_question(request.question)
        except ValueError as exc:
            response.message = str(exc)
            return response
        try:
            limits.check_options(list(request.options))
            options = parse_options(list(request.options))
        except ValueError as exc:
            response.message = f"bad options: {exc}"
            return response
        stamp_ns = stamp_to_ns(request.stamp)
        if stamp_ns:
            frames = self._clip_ending_at(stamp_ns, ASK_FRAME_WAIT_S)
            if frames is None:
                response.message = (
                    f"no buffered camera frame is stamped {request.stamp.sec}."
                    f"{request.stamp.nanosec:09d}: it never arrived within "
                    f"{ASK_FRAME_WAIT_S:.1f} s or the buffer no longer holds it (it keeps "
                    f"{self._buffer.max_frames} frames, {self._buffer.max_age_s:.1f} s)")
                return response
        else:
            frames = self._sample()
            if frames is None:
                response.message = self._no_frames(self._stream.clip.max_age_s)
                return response
        try:
            answer = self._service_engine.ask(question, [f.rgb for f in frames], clip=True,
                                              concepts=list(request.concepts) or None,
                                              options=options)
        except Exception as exc:
            response.message = f"could not answer: {self._explain(exc, 'ask')}"
            return response
        response.success = True
        response.answer = answer.answer
        response.choice = answer.choice or ""
        response.stamp = ns_to_stamp(frames[-1].stamp_ns)
        response.message = (f"answered about a clip of {len(frames)} frame(s) in "
                            f"{answer.latency_ms:.0f} ms")
        return response

    def _clip_ending_at(self, stamp_ns: int, wait_s: float) -> list[Frame] | None:
        """The clip the node would have cut when the frame stamped ``stamp_ns`` arrived (its
        clip settings, frames up to it only); waits up to ``wait_s`` for a frame that is not
        buffered yet. None when it is not buffered: never received, or evicted."""
        clip = self._stream.clip
        upto = self._buffer.up_to(stamp_ns, wait_s)
        if upto is None:
            return None
        return sample_clip(upto, clip.num_frames, clip.window_s, upto[-1].received_ns,
                           clip.max_age_s)

    def _on_list_concepts(self, request: ListConcepts.Request,
                          response: ListConcepts.Response) -> ListConcepts.Response:
        try:
            infos = self._service_engine.concepts()
            skipped = self._service_engine.skipped_concepts()
        except Exception as exc:
            response.success = False
            response.message = f"could not list the concepts: {self._explain(exc, 'list_concepts')}"
            self.get_logger().error(f"list_concepts: {response.message}")
            return response
        response.success = True
        response.message = f"{len(infos)} concept(s)" + (
            f"; {len(skipped)} stored concept(s) skipped, see skipped_reasons: forget, rebind "
            "or re-introduce them" if skipped else "")
        response.names = [c.name for c in infos]
        response.num_tokens = [int(c.num_tokens) for c in infos]
        response.num_views = [int(c.num_views) for c in infos]
        response.skipped_names = [s.name for s in skipped]
        response.skipped_reasons = [s.reason for s in skipped]
        return response

    def _skipped_concepts(self) -> list | None:
        """The engine's skipped concepts without waiting on it (for /diagnostics): asked of
        the in-process engine, else the newest that either worker client has heard (None:
        the worker has not told yet)."""
        if not self._remote:
            return self._service_engine.skipped_concepts()
        heard = [k for k in (self._service_engine.known_skipped(), self._engine.known_skipped())
                 if k is not None]
        return max(heard, key=lambda k: k[0])[1] if heard else None

    def _on_forget_concept(self, request: ForgetConcept.Request,
                           response: ForgetConcept.Response) -> ForgetConcept.Response:
        response.success = False
        if not request.name.strip():
            response.message = "the concept name is empty; call ~/list_concepts for the names"
            return response
        try:  # the same canonical form introduce_concept stored it under
            name = validate_concept_name(request.name)
        except InvalidConceptName as exc:
            response.message = f"{exc}; call ~/list_concepts for the names"
            return response
        try:  # a concept skipped at load (another model's, corrupt) is forgotten too
            forgotten = self._service_engine.forget(name)
            known = [] if forgotten else [c.name for c in self._service_engine.concepts()]
        except Exception as exc:
            response.message = f"could not forget {name!r}: {self._explain(exc, 'forget')}"
            return response
        response.success = bool(forgotten)
        response.message = (f"forgot {name!r}" if forgotten else
                            f"no concept named {name!r}; known: {', '.join(known) or 'none'}")
        return response
