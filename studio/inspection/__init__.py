"""Looking at a model: how good it is and why it says what it says.

``evaluate`` (metrics, hardest pictures), ``explain`` and ``attribution`` (Captum maps),
``trust`` (faithfulness, sanity and shortcut checks), ``model_card`` (what a run is and how
well it does, in words), ``charts`` (plotly figures for the app).

May import: the foundations, :mod:`studio.data`, :mod:`studio.models`.
"""
