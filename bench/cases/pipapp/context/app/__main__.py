from app.views import render

print(render())
