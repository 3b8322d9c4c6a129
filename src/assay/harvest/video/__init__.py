"""Stage I for video: source videos → clips with keyframes, motion and alignment signals, long takes.

Steps (importing this package registers them; PyAV and PySceneDetect are imported when a step runs):

* ``video_scenes`` (:mod:`.scenes`): shot detection (PySceneDetect detectors on PyAV frames), one clip record per
  scene, motion signals measured in the same pass.
* ``video_keyframes`` (:mod:`.keyframes`): the middle frame or k evenly spaced frames of each clip, JPEG bytes.
* ``video_stitch`` (:mod:`.stitch`): adjacent clips whose boundary keyframes are similar become one take (MiraData).
* ``video_motion_filter`` (:mod:`.motion`): drop still clips and shaking/flickering ones.
* ``video_clip_alignment`` (:mod:`.alignment`): caption-keyframe cosine (``clip.score``), drop low ones.
* ``video_split`` (:mod:`.split`): write each clip to a file, stream copy when the cut is on keyframes.

Source records come from ``assay.io.video.read_video_file`` (input ``format: video``). ``recipes/video-clips.yaml``
ties the steps together; ``docs/visual.md`` ("Video") explains them.
"""

from assay.harvest.video.alignment import VideoClipAlignment
from assay.harvest.video.keyframes import VideoKeyframes
from assay.harvest.video.motion import VideoMotionFilter
from assay.harvest.video.scenes import VideoScenes
from assay.harvest.video.split import VideoSplit
from assay.harvest.video.stitch import VideoStitch

__all__ = ["VideoClipAlignment", "VideoKeyframes", "VideoMotionFilter", "VideoScenes", "VideoSplit", "VideoStitch"]
