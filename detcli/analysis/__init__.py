"""What the analysis commands compute: assignment per image, anchor coverage and search, RoI
sampling, a config's pipeline run on one image; results are typed reports that ``detcli.cli``
renders and ``detcli.viz`` draws.

Nothing here registers components, so importing the package loads no submodule.
"""
