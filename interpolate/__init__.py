"""The interpolation stage. Importing it registers its model kinds with keyframe.hub (which
cannot import this package): `interpolate` (InterpolateModule), `motion` (MotionPrior) and
`general` (GeneralInterpolator); their shipped names live in interpolate/weights/."""

from __future__ import annotations

from keyframe import hub

hub.register(
    hub.Kind(
        "interpolate",
        cls=("interpolate.pipeline:InterpolatePipeline", "interpolate.module:InterpolateModule"),
        load="interpolate.module:load_interpolate",
        save="interpolate.module:save_interpolate",
        shipped_dir="interpolate.module:SHIPPED_DIR",
        what="interpolation model",
        files=True,
    )
)
hub.register(
    hub.Kind(
        "motion",
        cls="interpolate.motion:MotionPrior",
        load="interpolate.motion:load_prior",
        save="interpolate.motion:save_prior",
        what="motion prior",
    )
)
hub.register(
    hub.Kind(
        "general",
        cls="interpolate.general.pipeline:GeneralInterpolator",
        load="interpolate.general.pipeline:load_general",
        save="interpolate.general.pipeline:save_general",
        shipped_dir="interpolate.general.names:WEIGHTS_DIR",
        what="interpolation model",
    )
)
