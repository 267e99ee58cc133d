"""``det presets``: the presets shipped with det, each with what it is for.

Family, backbone, dataset and schedule come from each preset's resolved config, the summary
from its first line (``detcli.config.presets``). A preset's name goes wherever a config does:
``det train retinanet_tiny_synth``, ``extends = "retinanet_r50"``.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from detcli.cli.common import DebugOpt, JsonOpt, console, err_console, guarded, print_json


@guarded
def presets(as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """List the packaged presets: family, backbone, dataset, schedule and what each is for.

    A name works wherever a config file does, e.g. det train retinanet_tiny_synth,
    det config show retinanet_r50 --resolved, or extends = "retinanet_r50" in your own file.
    """
    from detcli.config.catalog import list_presets
    from detcli.config.presets import presets_dir

    infos = list_presets()
    if as_json:
        print_json([info.as_dict() for info in infos])
        return
    table = Table(title=f"presets in {presets_dir()}", title_justify="left", box=None,
                  padding=(0, 2), show_header=False)
    table.add_column("preset", style="bold", no_wrap=True)
    table.add_column("what it is")
    for info in infos:
        backbone = f"{info.backbone} {info.backbone_channels}"  # ResNet-50 [256, 512, ...]
        lines = [" | ".join((info.family, backbone, info.dataset, info.schedule))]
        if info.backbone_weights:  # a URL by its file name, to fit the column
            lines.append("backbone weights: " + ", ".join(
                w.rsplit("/", 1)[-1] if w.startswith(("http://", "https://")) else w
                for w in info.backbone_weights))
        details = Text("\n".join(lines), style="dim")
        table.add_row(info.name, Text.assemble(info.summary, "\n", details))
    console.print(table)
    err_console.print("a name works wherever a config file does: det train retinanet_tiny_synth; "
                      'extends = "retinanet_r50" in your own config', style="dim", highlight=False)
