from corral.cli.main import app

app()
