from leaderboard.scorer.main import run

run()
