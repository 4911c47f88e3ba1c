from leaderboard.ingest.main import run

run()
