from leaderboard.cli.main import cli

cli()
