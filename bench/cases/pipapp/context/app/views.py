import benchpkg00.mod00
import benchpkg20.mod10


def render() -> str:
    return f"pipapp: {benchpkg00.mod00.main()} {benchpkg20.mod10.main()} rev initial"
