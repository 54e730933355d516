"""The sweep on Ray Tune and Ray Train (plan, searchers, schedulers, trials, workers, summary);
the only layer that imports Ray or relies on its files and private attributes. Its plan,
runtime, paths, console and runner modules import Ray only when a sweep runs, so a dry run and
the results readers stay without it."""
