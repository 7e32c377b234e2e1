"""A run's HTML pages checked in headless Chromium, as a reader would open them: Chromium
started through Playwright with the network blocked (``browser``), what is checked on a page
(``checks``), and the command that renders DVC's plots page and checks both pages of a run
(``cli``, ``python -m dmae.ops.pages``)."""
