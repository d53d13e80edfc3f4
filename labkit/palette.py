"""The lab's colours: the Okabe-Ito palette, named once for every figure.

Okabe and Ito chose these eight so that readers with any common colour blindness can tell them
apart, red-green included; the figures also give each series a marker, line style or hatch of
its own, so that none depends on colour alone. Setups (labkit.bench.setups), plots, the pool
diagram and the request timeline all take their colours from here.
"""

ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
BLUISH_GREEN = "#009E73"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
REDDISH_PURPLE = "#CC79A7"
GREY = "#777777"
"""Not one of the eight: for what is beside the lesson (``/health``)."""
LIGHT_GREY = "#BBBBBB"
"""Not one of the eight: for steps a figure names but does not emphasise."""
