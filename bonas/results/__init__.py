"""The read side: what a study found, from its trial records alone (the leaderboard, the best trial, notes,
reports and the dashboard). No torch or Lightning here: `bonas trials` and `bonas best` answer in under a second."""
