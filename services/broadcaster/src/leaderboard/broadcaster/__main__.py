from leaderboard.broadcaster.main import run

run()
