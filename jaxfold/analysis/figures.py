"""Figures of a training trajectory: one PNG per group of measures, one panel per measure, one
line per kept chain, the training step on a log axis. Dashed lines are the truth's own value
(shape); dotted verticals mark the step at which a chain came within 90% of its final value
(accuracy)."""

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402 pylint: disable=wrong-import-position
import numpy as np  # noqa: E402 pylint: disable=wrong-import-position

Series = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]

# file name -> (title, [(measure, panel title)]).
FIGURES: Mapping[str, tuple[str, Sequence[tuple[str, str]]]] = {
    'accuracy.png': ('Accuracy against the truth (dotted: first step within 90% of the final '
                     'value)', (
        ('lddt_ca', 'lDDT-Cα'), ('gdt_ts', 'GDT-TS'), ('tm_score', 'TM-score'),
        ('rmsd_ca', 'Cα RMSD (Å)'))),
    'dimensions.png': ('Shape: variance along the principal axes (dashed: truth)', (
        ('pc1_fraction', 'PC1 fraction'), ('pc2_fraction', 'PC2 fraction'),
        ('pc3_fraction', 'PC3 fraction'), ('effective_dimension', 'effective dimension'))),
    'secondary_structure.png': ('Secondary structure recall (P-SEA)', (
        ('helix_recall', 'helix'), ('strand_recall', 'strand'), ('coil_recall', 'coil'))),
    'contacts.png': ('Cβ contact precision (8 Å) by sequence separation', (
        ('contact_precision_short', 'short (6-11)'), ('contact_precision_medium', 'medium (12-23)'),
        ('contact_precision_long', 'long (≥24)'))),
}
_MARKED = frozenset({'lddt_ca', 'gdt_ts', 'tm_score', 'rmsd_ca'})
# Scores between 0 and 1 are drawn on that whole range, so that flat lines read as such.
_UNIT = frozenset({'lddt_ca', 'gdt_ts', 'tm_score', 'helix_recall', 'strand_recall',
                   'coil_recall', 'contact_precision_short', 'contact_precision_medium',
                   'contact_precision_long'})


def _panel(axis, by_chain: Series, measure: str, title: str,
           reached: Mapping[str, Mapping[str, int | None]]) -> None:
  for number, (chain, by_measure) in enumerate(by_chain.items()):
    colour = f'C{number % 10}'
    steps, values = by_measure[measure]
    axis.plot(steps, values, marker='o', markersize=3, color=colour, label=chain)
    truth = by_measure.get(f'truth_{measure}')
    if truth is not None:
      axis.axhline(truth[1][-1], color=colour, linestyle='--', linewidth=1)
    step = reached.get(chain, {}).get(measure)
    if measure in _MARKED and step is not None:
      axis.axvline(step, color=colour, linestyle=':', linewidth=1)
  axis.set_xscale('log')
  if measure in _UNIT:
    axis.set_ylim(-0.03, 1.03)
  axis.set_title(title)
  axis.set_xlabel('training step')
  axis.grid(True, which='both', alpha=0.3)


def render(name: str, by_chain: Series, reached: Mapping[str, Mapping[str, int | None]]
           ) -> bytes:
  """The PNG of figure `name` (a key of FIGURES)."""
  title, panels = FIGURES[name]
  figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
  for axis, (measure, panel_title) in zip(axes[0], panels):
    _panel(axis, by_chain, measure, panel_title, reached)
  axes[0][-1].legend(fontsize=8, loc='best')
  figure.suptitle(title)
  figure.tight_layout()
  png = io.BytesIO()
  figure.savefig(png, format='png', dpi=110)
  plt.close(figure)
  return png.getvalue()
