"""The data's own limit: what a *perfect reader of the images* could score on a dataset's test split.

The generator knows how it drew every label and the renderer decides which labels leave different
pixels. Where two values are drawn alike (two category3 sharing a silhouette, Sand and Archive Beige,
Check and Vintage Check), no reader of the images, however good, can tell them apart every time: the
best it can do is answer the more probable one. This module computes that best score, so a fine-tune's
accuracy can be read against it ("reached 97 % of the limit") rather than against 100 %.

What the renderer shows, derived from its own tables and code paths (so a renderer change moves the limit):

* **Drawing** (:func:`appearance`): the geometry of a (silhouette, category1, trim bucket), i.e. the
  builder's operations (``render.shapes``), made into pixels by ``render.studio._transform`` at a fixed pose.
  Two silhouettes whose builders draw the same thing fall together; so do the trim buckets whose trim
  is the same (the renderer quantises ``Look.trim`` to 11 buckets, and most silhouettes change trim at
  only a few thresholds), and category1 values drawn alike (kids' items are drawn smaller and
  menswear wider, so today no two are). The trim is drawn for each row independently of its labels
  and price, and the rows do not record it: the limit is the reader's *expected* score over it.
* **Texture**: materials sharing a renderer texture (``Canvas`` and ``Cotton Gabardine`` both ``canvas``),
  and textures whose tiles are identical.
* **Pattern**: patterns sharing a renderer pattern (``Check`` and ``Vintage Check`` both ``check``), and
  renderer patterns drawn with identical tiles and colours.
* **Colour**: two colours render alike when, under the brightness settings the renderer's poses draw
  from (sampled from ``render.studio._pose``), their product shading ramps (``_product_palette``) come
  within :data:`COLOUR_ALIKE_LEVELS` of each other (RMS over the ramp, in 0..255 levels). The
  threshold is calibrated on what a trained CNN confused (issue 18: Sand vs Archive Beige at 6.4,
  Camel vs Honey at 6.9); the next-closest pair of the built-in taxonomy, Ivory vs White at 12.3, is
  told apart. Trim is drawn in flat colours derived from the same RGB and is not counted separately.

The reader (Bayes-optimal): for a test row it sees the row's *visible signature* (drawing class,
texture class, pattern class, colour class) and answers, for each label, the value with the highest
probability given that signature, and for the price the median of the conditional price distribution.
The probabilities are the generator's exact ones (the taxonomy's weights, the log-normal price draw,
its snapping to price points and the trim's uniform draw, as :mod:`generator.catalog` draws them), not counts
from the train split: with every visible attribute in the signature most test rows' cells hold 0-3


train rows, so counts would measure the train split's noise instead of the data's limit. The answers
are scored on the test split, like a fine-tune's. Train counts give the baselines (majority class,
global median price, median price of the true category3).

``limits.json`` (written beside ``privacy_report.json`` in every synthetic run's folder; the fine-tune
side reads it from the dataset folder). Keys:

* ``category3_accuracy``, ``category2_accuracy``, ``colour_accuracy``, ``material_accuracy``,
  ``pattern_accuracy``: the perfect reader's accuracy on the test split, in [0, 1] (``null`` without a
  test split). category3 compares the code string (every ``N.A.`` is the same answer), category2 the code,
  colour / material the taxonomy's names, pattern the taxonomy's pattern key (``"none"`` for no pattern).
* ``price_mape``: mean absolute percentage error of ``full_price`` by the conditional median given
  everything visible (category1, drawing, texture, pattern, colour), as a fraction (0.05 = 5 %). Version 1
  files also had ``price_mape_without_trim``: the trim then followed the price tier and gave it away.
* ``price_mape_category3_median``: by the train median of the row's true (category2, category3).
* ``price_mape_global_median``: by the train split's median ``full_price``.
* ``majority_accuracy``: ``{label: accuracy}`` of always answering the train split's most frequent value.
* ``n_train``, ``n_test``: rows used (a split larger than :data:`MAX_ROWS_PER_SPLIT` is read up to that
  many rows; splits are already shuffled, so that is a random sample).
* ``confusable``: ``{label: [[a, b], ...]}`` value pairs that share a drawing (silhouette, texture,
  pattern or colour class) for label in category3, category2, colour, material, pattern, plus
  ``silhouette``. A category3 code used under several category2 (``N.A.``) is written
  ``"CATEGORY2 / N.A."``, as in the card's category table. A pair listed here may still be told apart
  through another attribute (SWEATERS in wool vs HOODIES in cotton); the accuracies count that.
* ``colour_alike_levels``: the colour threshold used; ``version``: format version of this file.

Pure Python and numpy: the generator never imports torch.

The package: :mod:`.appearance` (what the renderer draws alike), :mod:`.titles` (a row's drawn labels
from its title), :mod:`.reader` (the perfect reader), :mod:`.score` (the limit and ``limits.json``).
"""
from __future__ import annotations

from generator.limits.appearance import COLOUR_ALIKE_LEVELS, Appearance, appearance, colour_distance
from generator.limits.reader import LABELS
from generator.limits.score import (FORMAT_VERSION, LIMITS_FILENAME, MAX_ROWS_PER_SPLIT, ROW_COLUMNS, Limits, compute,
                                    confusable_pairs, from_run, read_json, read_split_rows, write_json)
from generator.limits.titles import LimitsError

__all__ = ["COLOUR_ALIKE_LEVELS", "FORMAT_VERSION", "LABELS", "LIMITS_FILENAME", "MAX_ROWS_PER_SPLIT", "ROW_COLUMNS",
           "Appearance", "Limits", "LimitsError", "appearance", "colour_distance", "compute", "confusable_pairs",
           "from_run", "read_json", "read_split_rows", "write_json"]
