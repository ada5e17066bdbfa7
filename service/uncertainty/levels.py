"""The confidence levels a request may ask for: defined once, read by settings, codecs and docs."""

from __future__ import annotations

#: Below 0.5 an "interval" would hold less than half the sampling distribution; above 0.999 the
#: Student quantile at small K makes intervals span (0, 1) and conformal sets every class.
MIN_CONFIDENCE_LEVEL = 0.5
MAX_CONFIDENCE_LEVEL = 0.999
