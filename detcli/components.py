"""Import every built-in component module so that each registers itself."""

import detcli.data.datasets  # noqa: F401
import detcli.data.transforms  # noqa: F401
import detcli.engine.config  # noqa: F401
import detcli.engine.hooks  # noqa: F401
import detcli.models  # noqa: F401
import detcli.task  # noqa: F401
