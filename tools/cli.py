"""`alexnet-tools`: the offline data tools and the model summary, one click group."""

import click

from alexnet.tools.export_ffcv import export_ffcv
from alexnet.tools.pca_stats import pca_stats
from alexnet.tools.prepare import prepare_cmd
from alexnet.tools.summary import summary
from alexnet.tools.synth import synth
from alexnet.tools.verify import verify_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Offline tools: make a synthetic ILSVRC tree, prepare shards, PCA statistics, verify, FFCV export; the model summary."""


main.add_command(synth)
main.add_command(prepare_cmd)
main.add_command(pca_stats)
main.add_command(verify_cmd)
main.add_command(summary)
main.add_command(export_ffcv)
